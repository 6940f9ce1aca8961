KEY = "imports"
