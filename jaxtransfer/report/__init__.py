"""Statistics, summary tables and figures from trial records."""
