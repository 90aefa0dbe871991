"""Dropout Lab: `streamlit run app.py`. The views live in dropout_demo/ui/."""

import os

# Before torch loads: OpenMP threads that wait sleep instead of spinning. A shared server runs
# training beside Streamlit's threads, and spinning workers then steal the cores they wait for.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from dropout_demo.ui.app import main

main()
