"""``python -m ringaudio.ring``: the ring demo (see :mod:`ringaudio.ring.demo`)."""

import sys

from .demo import main

sys.exit(main())
