"""Tables in: run dirs gathered into a runs table, a table read and validated, synthetic and observed
facts."""
