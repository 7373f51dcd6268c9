"""pocketops core: no Textual here. Datasets, models, trainer, export, drift, cost, telemetry, worker."""
