"""The result folder: THE reader and writer of result.json, its revisions, edits and seals."""
