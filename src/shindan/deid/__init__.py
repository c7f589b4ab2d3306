"""De-identification for export from a hospital (``shindan deid``).

The data flow: :mod:`.secret` (the site's key file) → :mod:`.pseudonyms` (keyed, repeatable
pseudonyms, UIDs and date shifts) → one module per kind of input (DICOM, slides, plain images,
burned-in text) → the export folder with its manifest, checked by :mod:`.check`. The linkage
table (pseudonym ↔ identifiers) is encrypted and written outside the export folder.
"""
