KEY = "memory"
