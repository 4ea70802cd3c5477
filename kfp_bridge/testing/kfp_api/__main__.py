"""``python -m kfp_bridge.testing.kfp_api --port 0``: prints ``KFP_STANDIN_URL=...`` first."""

import sys

from kfp_bridge.testing.kfp_api.server import main

sys.exit(main())
