"""The study harness: tasks, methods, trials, executors and the results store."""
