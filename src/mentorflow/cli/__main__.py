"""``python -m mentorflow.cli``: the operator CLI, as ``mentorflow up`` starts its children."""

from mentorflow.cli import main

main()
