"""The benchmark's upstream: canned Kimi responses served by nginx on its own CPU (see bench/README.md)."""
