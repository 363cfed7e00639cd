"""``python -m experiments.compare`` (the same as ``dgmjax compare``)."""

from experiments.compare import main

raise SystemExit(main())
