"""Pattern tables (fusion, observation, lowering) and the matcher they share."""
