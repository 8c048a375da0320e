"""`python -m wsae_jax ...` is the `wsae` command."""

import sys

from wsae_jax.app.cli import main

sys.exit(main())
