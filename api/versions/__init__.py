"""Model versions: add (canary), list, promote, rollback."""
