"""The store tests: the contract both stores keep, and what each does on its own."""
