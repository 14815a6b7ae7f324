"""Workers: claim tasks from the store, fetch media, run the engine in a child process, store results."""
