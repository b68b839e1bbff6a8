"""The web app's actions, one module per concern, over ``models/`` and ``db/``; no streamlit here.

Pages read their widgets, call one function of the module they use and render what it returns; tests call the same
functions with the same bytes. Modules: :mod:`~webapp.services.who` (who may act), :mod:`~webapp.services.studies`
(reads of one study), :mod:`~webapp.services.weights`, :mod:`~webapp.services.analysis`,
:mod:`~webapp.services.library`, :mod:`~webapp.services.review`, :mod:`~webapp.services.exports`,
:mod:`~webapp.services.classroom`, :mod:`~webapp.services.privacy`, :mod:`~webapp.services.demo`.
"""
