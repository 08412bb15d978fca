{
  "targets": [{
    "target_name": "fuse",
    "include_dirs": [
      "<!(node -e \"require('napi-macros')\")",
      "<!@(pkg-config --cflags-only-I fuse | sed s/-I//g)",
    ],
    "libraries": [
      "<!@(pkg-config --libs fuse)",
    ],
    "sources": [
      "fuse-native.c",
      "order.c"
    ],
    'cflags': [
      '-g',
      '-D_FILE_OFFSET_BITS=64',
      '-O3',
      '-Wall'
    ],
  }]
}
