"""A small calculator package used by the DAG example."""
