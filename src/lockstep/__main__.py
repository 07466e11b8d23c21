"""`python -m lockstep`: what the images run."""

from lockstep.cli import main

raise SystemExit(main())
