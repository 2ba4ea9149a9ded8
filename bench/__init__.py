"""``make bench``: this project next to the tools an operator would use, with S3 at a distance.

Run ``python -m bench --help``; ``bench/README.md`` says what is measured and how.
"""
