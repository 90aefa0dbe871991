"""Dropout Lab: `streamlit run app.py`. The views live in dropout_demo/ui/."""

import os

# Before torch loads: OpenMP threads that wait sleep instead of spinning. A shared server runs
# training beside Streamlit's threads, and spinning workers then steal the cores they wait for.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The training worker needs seconds to import torch and load MNIST: on the server's first page
# it starts now, while this page imports torch too, not after (dropout_demo/worker_start.py).
from dropout_demo.worker_start import start_early

start_early()

from dropout_demo.ui.app import main  # noqa: E402

main()
