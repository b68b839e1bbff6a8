"""AffectLab's Streamlit app: thin pages over ``models/`` (inference) and ``db/`` (the label store).

Run it with ``make run`` (``streamlit run webapp/app.py``). Only ``webapp/`` imports streamlit; the action functions
the pages call live in :mod:`webapp.services`, one module per concern (no streamlit), the figures in
:mod:`webapp.figures`.
"""
