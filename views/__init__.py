"""The shapes of the JSON views the projections write and the API serves (``views.rows``)."""
