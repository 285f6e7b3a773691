"""Reports of the current certifications and their recent changes: `build` reads and
decides, `formats` renders JSON, Markdown and JUnit XML."""
