{
  "targets": [{
    "target_name": "posix",
    "sources": ["posix.c"],
    "cflags": ["-O2", "-Wall", "-Wextra", "-D_GNU_SOURCE"]
  }]
}
