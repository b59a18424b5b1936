# This folder is a user's own project, not kimiflow's tests: tests/sim/test_user_suite.py copies it
# out and runs it with pytest against a `kimiflow sim --answers answers.jsonl` subprocess, the way a
# user's CI would. Kimiflow's own run must not collect it (it needs that simulator's address).
collect_ignore_glob = ["test_*.py"]
