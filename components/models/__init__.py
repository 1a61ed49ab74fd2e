"""Language models the pipeline uses: the bundled default and how a model name is resolved."""
