"""Derive the worker's ``pyodide.asm.js``: the official glue with its dynamic linker's check of
unresolved symbols made incremental, and shared libraries compiled ahead taken as they are.

After each shared library it loads (numpy's two at ``import numpy``, numpy.random's five at the
engine's first draw), Emscripten's dynamic linker (``reportUndefinedSymbols`` in Pyodide
0.27.7's ``pyodide.asm.js``, from Emscripten's libdylink.js) walks the whole global offset
table, about 10,000 entries, and reads each entry's ``WebAssembly.Global`` value to find the
ones still 0: 5-18 ms a library under Node. The derived glue checks only the entries it has
not seen before and those it left unresolved, in the same order, so every symbol gets the same
address and table slot: an entry once set is never set back to 0 (its value is a table slot or
a relocated address).

A library Python loads (``dlopen``, synchronous) is compiled on the engine's thread with
``new WebAssembly.Module`` from the file's bytes: 11-40 ms a page view for numpy's. The worker
compiles numpy's libraries with ``WebAssembly.compile`` (off its thread) as soon as their archive
arrives, while Python starts, and puts them in ``Module.compiledDynlibs`` (a Map from the file's
path in Pyodide's file system to its ``WebAssembly.Module``); the derived linker instantiates the
compiled module of a library it finds there instead of reading and compiling the file. The
linker's own code reads a library's metadata from either (``getDylinkMetadata`` and
``loadWebAssemblyModule`` take a ``WebAssembly.Module`` as they take bytes), so it links the same.

Every other byte is the official file's. ``derive_glue`` checks the official file's sha256 and
that each replaced text occurs exactly once, so a Pyodide upgrade cannot ship a stale patch.
"""

from __future__ import annotations

import hashlib

OFFICIAL_SHA256 = "6b4c90de5b7172873f04f21884d0e9d2274e305fe32116558fe3e4fbe3618d51"
DERIVED_NAME = "pyodide.asm-1glue.js"  # a build tag, as the derived numpy wheel carries

REPORT_UNDEFINED_SYMBOLS = (
    "var reportUndefinedSymbols=()=>{for(var[symName,entry]of Object.entries(GOT)){"
    "if(entry.value==0){var value=resolveGlobalSymbol(symName,true).sym;"
    "if(!value&&!entry.required){continue}"
    'if(typeof value=="function"){entry.value=addFunction(value,value.sig)}'
    'else if(typeof value=="number"){entry.value=value}'
    "else{throw new Error(`bad export type for '${symName}': ${typeof value}`)}}}};"
)
# The same loop over the entries new since the last call and those left at 0, in the table's
# order (the old ones come first); an entry the loop throws at stays unresolved for the next.
FAST_REPORT_UNDEFINED_SYMBOLS = (
    "var GOTChecked=0,GOTUnresolved=[];"
    "var reportUndefinedSymbols=()=>{var names=Object.keys(GOT);"
    "var todo=GOTUnresolved.concat(names.slice(GOTChecked)),left=[],i=0;"
    "GOTChecked=names.length;"
    "try{for(;i<todo.length;i++){var symName=todo[i],entry=GOT[symName];"
    "if(entry.value==0){var value=resolveGlobalSymbol(symName,true).sym;"
    "if(!value&&!entry.required){left.push(symName);continue}"
    'if(typeof value=="function"){entry.value=addFunction(value,value.sig)}'
    'else if(typeof value=="number"){entry.value=value}'
    "else{throw new Error(`bad export type for '${symName}': ${typeof value}`)}"
    "if(entry.value==0){left.push(symName)}}}}"
    "finally{GOTUnresolved=left.concat(todo.slice(i))}};"
)

# loadDynamicLibrary's getExports, the synchronous load (Python's dlopen)
LOAD_LIBRARY_FILE = "return loadWebAssemblyModule(loadLibData(),flags,libName,localScope,handle)}"
LOAD_COMPILED_LIBRARY = (
    'return loadWebAssemblyModule(Module["compiledDynlibs"]?.get(libName)||loadLibData(),'
    "flags,libName,localScope,handle)}"
)

REPLACEMENTS = [
    (REPORT_UNDEFINED_SYMBOLS, FAST_REPORT_UNDEFINED_SYMBOLS),
    (LOAD_LIBRARY_FILE, LOAD_COMPILED_LIBRARY),
]


class GlueError(RuntimeError):
    """The official glue is not the one these replacements were written for."""


def derive_glue(official: bytes) -> bytes:
    """The official ``pyodide.asm.js`` with :data:`REPLACEMENTS` applied."""
    if hashlib.sha256(official).hexdigest() != OFFICIAL_SHA256:
        raise GlueError(
            "pyodide.asm.js is not Pyodide 0.27.7's: check build/pyodide_glue.py's"
            " replacements against the new one, then update OFFICIAL_SHA256"
        )
    text = official.decode()
    for old, new in REPLACEMENTS:
        if text.count(old) != 1:
            raise GlueError(f"pyodide.asm.js has {text.count(old)} copies of {old[:60]!r}...")
        text = text.replace(old, new)
    return text.encode()
