"""New-task definitions: data loaders, prompt templates and scorers."""
