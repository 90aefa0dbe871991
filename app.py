"""Dropout Lab: `streamlit run app.py`. The views live in dropout_demo/ui/."""

from dropout_demo.ui.app import main

main()
