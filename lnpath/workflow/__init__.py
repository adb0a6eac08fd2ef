"""What a user does with a slide: score it, review, confirm and verify it, compare two biopsies.

Each function here is one step of the pathologist's workflow; the CLI and the workstation call them.
"""
