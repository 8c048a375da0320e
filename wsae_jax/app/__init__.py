"""The application: the `wsae` command (cli), `wsae demo`, sweep files and plots. Unlike the
library, it prints, plots and writes files."""
