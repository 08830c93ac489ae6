"""Train a small CNN with IGOSCallback and print how faithful its explanations become."""
from lightning_igos.demo import main

raise SystemExit(main())
