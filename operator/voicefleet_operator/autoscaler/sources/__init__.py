"""Where the autoscaler reads load: pods (scrape) or prometheus (PromQL)."""
