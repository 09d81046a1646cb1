"""`tlr record`, `tlr watch`, `tlr jobs`, `tlr files`: a terminal client of the REST API."""
