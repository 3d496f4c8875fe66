"""Who listens: the Subscriber contract, run callbacks, writers and displays."""
