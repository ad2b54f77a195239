"""The bedside page: what a nurse or patient sees and records, and who may.

``server`` serves the page (``bedside.html``), its JSON API and event stream on the bounded
``http_server`` (also under the nurses' station); ``backend`` is what the page reads and records,
``actions`` what a person does with an answer, ``auth`` and ``users`` who may use the page, and
``summary_pdf`` prints the clinician's day.
"""
