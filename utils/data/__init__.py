"""Stage 1, data: from a raw dataset folder to a split manifest.

Owns the dataset facts (`datasets`: classes, counts, URLs, licences, raw-layout file names), the
TABLE every reader returns (`table`, `readers`, `dermamnist`), cheap and full checks
(`validation`, `check`), the one image gate every image file passes (`images`: header first, a
pixel cap, any format a user has), leakage-free splits and the manifest file (`splits`, `manifest`),
downloads (`transport`: resumable HTTP, checksums, safe extraction; `download`: per-dataset
plans), the embedded synthetic default (`synthetic_drawing`, `synthetic`) and where a dataset
lives (`location`). May import only the base modules (`utils.errors`, `paths`, `fileio`,
`tables`, `figures`, `arguments`). Raw folders are only ever read.
"""
