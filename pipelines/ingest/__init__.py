"""Ingestion: venues, ccxt collectors, normalised rows, incremental pulls, archives."""
