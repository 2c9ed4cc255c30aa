"""`python -m keras_gdzoo` runs the `gdzoo` command."""

from keras_gdzoo.cli import main

raise SystemExit(main())
