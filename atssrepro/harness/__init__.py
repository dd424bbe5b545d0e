"""The paper as experiments: table specs, the run store, executors, results and reports."""
