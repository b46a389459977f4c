"""Small runnable servers that tests start as child processes."""
