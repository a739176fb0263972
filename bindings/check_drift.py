#!/usr/bin/env python3
"""Drift check: the Python and Rust bindings against include/rwkvpeft.h.

Parses the header (every RWKVPEFT_API function, every struct with a body, every enum
constant and numeric #define RWKVPEFT_*) and compares it with

  * bindings/python/rwkvpeft/_ffi.py  (FUNCTIONS, the ctypes Structures, the constants)
  * bindings/rust/src/sys.rs          (extern "C" fns, #[repr(C)] structs, pub consts)

For functions: presence (missing / extra), number of arguments, and each argument's and the
return value's type class (i32, u64, f32, ptr, fnptr, char[16], ...). For structs: field
names, order and type classes. For constants: presence and value. With a C compiler (cc)
it also compiles a probe that prints sizeof/offsetof of every struct field and checks the
ctypes offsets against it (--no-cc skips that).

Exit status 0 when everything matches, 1 with a list of differences otherwise.

    python3 bindings/check_drift.py [--header include/rwkvpeft.h] [--no-cc] [-v]
"""
import argparse
import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

C_SCALARS = {
    "uint32_t": "u32", "int32_t": "i32", "uint64_t": "u64", "int64_t": "i64",
    "float": "f32", "double": "f64", "size_t": "usize", "void": "void",
    "uint8_t": "u8", "int8_t": "i8", "uint16_t": "u16", "int16_t": "i16",
    "char": "char", "int": "i32", "unsigned": "u32",
}


# ----------------------------------------------------------------------------------------
# Header
# ----------------------------------------------------------------------------------------
def strip_c(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return text


def split_top(s, sep=","):
    """Splits at `sep` outside (), <>, []."""
    out, depth, cur = [], 0, []
    for ch in s:
        if ch in "(<[":
            depth += 1
        elif ch in ")>]":
            depth -= 1
        if ch == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur))
    return [x.strip() for x in out if x.strip()]


class Header:
    def __init__(self, path):
        raw = open(path, encoding="utf-8").read()
        self.defines = {}
        for m in re.finditer(r"^\s*#\s*define\s+(RWKVPEFT_\w+)\s+\(?(-?\d+)\)?\s*$", strip_c(raw),
                             flags=re.M):
            self.defines[m.group(1)] = int(m.group(2))
        text = "\n".join(l for l in strip_c(raw).split("\n") if not l.strip().startswith("#"))
        self.enum_types = set()
        self.constants = dict(self.defines)
        for m in re.finditer(r"typedef\s+enum\s+(\w+)\s*\{(.*?)\}\s*(\w+)\s*;", text, flags=re.S):
            self.enum_types.update({m.group(1), m.group(3)})
            value = -1
            for item in split_top(m.group(2)):
                if "=" in item:
                    name, v = [x.strip() for x in item.split("=", 1)]
                    value = int(v.replace("(", "").replace(")", ""), 0)
                else:
                    name, value = item.strip(), value + 1
                self.constants[name] = value
        self.fnptr_types = set(re.findall(r"typedef\s+[\w\s\*]+\(\s*\*\s*(\w+)\s*\)\s*\(", text))
        self.structs = {}
        for m in re.finditer(r"typedef\s+struct\s+(\w+)\s*\{(.*?)\}\s*(\w+)\s*;", text, flags=re.S):
            self.structs[m.group(3)] = self._fields(m.group(2))
        self.functions = {}
        for m in re.finditer(r"RWKVPEFT_API\s+([^;{}]*?)\b(rwkvpeft_\w+)\s*\(([^;{}]*?)\)\s*;", text,
                             flags=re.S):
            ret, name, args = m.group(1), m.group(2), m.group(3).strip()
            arglist = [] if args in ("", "void") else split_top(args)
            self.functions[name] = (self.ctype(ret), [self.ctype(self._drop_name(a)) for a in arglist],
                                    [a for a in arglist])

    @staticmethod
    def _drop_name(decl):
        decl = decl.strip()
        if "(" in decl:  # function pointer: keep as is
            return decl
        m = re.match(r"^(.*?)(\w+)\s*$", decl, flags=re.S)
        if m and m.group(1).strip():
            return m.group(1)
        return decl

    def ctype(self, t):
        t = " ".join(t.replace("*", " * ").split())
        if "(" in t:
            return "fnptr"
        if "*" in t:
            return "ptr"
        t = t.replace("const ", "").replace("struct ", "").replace("enum ", "").strip()
        if t in self.enum_types:
            return "i32"
        if t in self.fnptr_types:
            return "fnptr"
        return C_SCALARS.get(t, t)

    def _fields(self, body):
        fields = []
        for decl in [d.strip() for d in body.split(";") if d.strip()]:
            decl = " ".join(decl.split())
            m = re.match(r"^(.*?)\(\s*\*\s*(\w+)\s*\)\s*\(.*\)$", decl)
            if m:
                fields.append((m.group(2), "fnptr"))
                continue
            m = re.match(r"^(.*?)\s*(\w+)\s*\[\s*(\d+)\s*\]$", decl)
            if m:
                fields.append((m.group(2), "%s[%s]" % (self.ctype(m.group(1)), m.group(3))))
                continue
            base_m = re.match(r"^((?:const\s+|unsigned\s+|struct\s+|enum\s+)*\w+)\s*(.*)$", decl)
            base, rest = base_m.group(1), base_m.group(2)
            for d in split_top(rest):
                stars = d.count("*")
                name = d.replace("*", "").strip()
                fields.append((name, "ptr" if stars else self.ctype(base)))
        return fields


# ----------------------------------------------------------------------------------------
# Python
# ----------------------------------------------------------------------------------------
def load_python_ffi():
    sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
    try:
        import importlib
        return importlib.import_module("rwkvpeft._ffi")
    finally:
        sys.path.pop(0)


def py_class(t):
    if t is None:
        return "void"
    simple = {ctypes.c_uint32: "u32", ctypes.c_int32: "i32", ctypes.c_uint64: "u64",
              ctypes.c_int64: "i64", ctypes.c_float: "f32", ctypes.c_double: "f64",
              ctypes.c_uint8: "u8", ctypes.c_int8: "i8", ctypes.c_uint16: "u16",
              ctypes.c_int16: "i16", ctypes.c_char: "char"}
    # ctypes folds size_t into c_ulong (== c_uint64 on LP64): compare them as equal
    if t is ctypes.c_size_t:
        return "usize|u64"
    if t in simple:
        return simple[t]
    if t in (ctypes.c_char_p, ctypes.c_void_p, ctypes.c_wchar_p):
        return "ptr"
    if isinstance(t, type) and issubclass(t, ctypes._Pointer):
        return "ptr"
    if isinstance(t, type) and issubclass(t, ctypes._CFuncPtr):
        return "fnptr"
    if isinstance(t, type) and issubclass(t, ctypes.Array):
        return "%s[%d]" % (py_class(t._type_), t._length_)
    return repr(t)


def same(c, other):
    if c == other:
        return True
    if "|" in other:
        return c in other.split("|")
    return False


# ----------------------------------------------------------------------------------------
# Rust
# ----------------------------------------------------------------------------------------
class RustSys:
    SCALARS = {"u32": "u32", "i32": "i32", "u64": "u64", "i64": "i64", "f32": "f32", "f64": "f64",
               "usize": "usize", "u8": "u8", "i8": "i8", "u16": "u16", "i16": "i16",
               "c_char": "char", "c_int": "i32", "()": "void"}

    def __init__(self, path):
        raw = open(path, encoding="utf-8").read()
        text = re.sub(r"//[^\n]*", " ", raw)
        text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
        self.aliases = {m.group(1): m.group(2).strip()
                        for m in re.finditer(r"pub\s+type\s+(\w+)\s*=\s*(.*?);", text, flags=re.S)}
        self.constants = {}
        for m in re.finditer(r"pub\s+const\s+(\w+)\s*:\s*[\w:]+\s*=\s*([^;]+);", text):
            expr = m.group(2).strip()
            try:
                self.constants[m.group(1)] = int(expr, 0)
            except ValueError:
                # a simple arithmetic expression of earlier constants
                try:
                    self.constants[m.group(1)] = int(eval(expr, {}, dict(self.constants)))  # noqa: S307
                except Exception:
                    self.constants[m.group(1)] = expr
        self.structs, self.repr_c = {}, set()
        for m in re.finditer(r"((?:#\[[^\]]*\]\s*)*)pub\s+struct\s+(\w+)\s*\{(.*?)\}", text, flags=re.S):
            attrs, name, body = m.group(1), m.group(2), m.group(3)
            if "repr(C)" in attrs.replace(" ", ""):
                self.repr_c.add(name)
            fields = []
            for f in split_top(body):
                fm = re.match(r"^(pub\s+)?(\w+)\s*:\s*(.*)$", f, flags=re.S)
                if fm:
                    fields.append((fm.group(2), self.rtype(fm.group(3))))
            self.structs[name] = fields
        self.functions = {}
        block = re.search(r'extern\s+"C"\s*\{(.*)\}', text, flags=re.S)
        body = block.group(1) if block else ""
        for m in re.finditer(r"pub\s+fn\s+(\w+)\s*\((.*?)\)\s*(?:->\s*([^;]+))?;", body, flags=re.S):
            args = split_top(m.group(2))
            types = [self.rtype(a.split(":", 1)[1]) for a in args]
            self.functions[m.group(1)] = (self.rtype(m.group(3) or "()"), types, args)

    def rtype(self, t):
        t = " ".join(t.split())
        if t.startswith("*const") or t.startswith("*mut") or t.startswith("&"):
            return "ptr"
        if t.startswith("Option<") and "fn(" in t.replace(" (", "("):
            return "fnptr"
        if t.startswith("unsafe extern") or t.startswith("extern"):
            return "fnptr"
        m = re.match(r"^\[\s*(.*?)\s*;\s*(\d+)\s*\]$", t)
        if m:
            return "%s[%s]" % (self.rtype(m.group(1)), m.group(2))
        t = t.split("::")[-1]
        if t in self.aliases:
            return self.rtype(self.aliases[t])
        return self.SCALARS.get(t, t)


# ----------------------------------------------------------------------------------------
# Comparison
# ----------------------------------------------------------------------------------------
def compare(header, py, rs, verbose):
    errors = []

    def err(msg):
        errors.append(msg)

    # functions
    py_fns = getattr(py, "FUNCTIONS", {})
    for lang, fns in (("python", None), ("rust", rs.functions)):
        if lang == "python":
            table = {n: (py_class(r), [py_class(a) for a in args]) for n, (r, args) in py_fns.items()}
        else:
            table = {n: (r, a) for n, (r, a, _) in fns.items()}
        for name, (cret, cargs, cdecl) in header.functions.items():
            if name not in table:
                err("%s: missing function %s(%s)" % (lang, name, ", ".join(cdecl)))
                continue
            ret, args = table[name]
            if len(args) != len(cargs):
                err("%s: %s takes %d arguments, the header %d" % (lang, name, len(args), len(cargs)))
                continue
            if not same(cret, ret):
                err("%s: %s returns %s, the header %s" % (lang, name, ret, cret))
            for i, (ca, a) in enumerate(zip(cargs, args)):
                if not same(ca, a):
                    err("%s: %s argument %d (%s) is %s, the header %s"
                        % (lang, name, i + 1, cdecl[i], a, ca))
        for name in sorted(set(table) - set(header.functions)):
            err("%s: extra function %s (not in the header)" % (lang, name))

    # structs
    py_structs = {c.__name__: c for c in getattr(py, "STRUCTS", [])}
    for name, cfields in header.structs.items():
        pc = py_structs.get(name) or getattr(py, name, None)
        if pc is None or not hasattr(pc, "_fields_"):
            err("python: missing struct %s" % name)
        else:
            pf = [(f[0], py_class(f[1])) for f in pc._fields_]
            _cmp_fields(err, "python", name, cfields, pf)
        if name not in rs.structs:
            err("rust: missing struct %s" % name)
        else:
            if name not in rs.repr_c:
                err("rust: struct %s lacks #[repr(C)]" % name)
            _cmp_fields(err, "rust", name, cfields, rs.structs[name])
    for name in sorted(set(py_structs) - set(header.structs)):
        err("python: extra struct %s (not in the header)" % name)

    # constants
    for name, value in header.constants.items():
        for lang, table in (("python", {k: getattr(py, k) for k in dir(py) if k.startswith("RWKVPEFT_")}),
                            ("rust", rs.constants)):
            if name not in table:
                err("%s: missing constant %s = %d" % (lang, name, value))
            elif table[name] != value:
                err("%s: constant %s = %r, the header %d" % (lang, name, table[name], value))

    if verbose:
        print("header: %d functions, %d structs, %d constants"
              % (len(header.functions), len(header.structs), len(header.constants)))
    return errors


def _cmp_fields(err, lang, name, cfields, ofields):
    cn, on = [f[0] for f in cfields], [f[0] for f in ofields]
    if len(cfields) != len(ofields):
        err("%s: struct %s has %d fields, the header %d (missing: %s; extra: %s)"
            % (lang, name, len(ofields), len(cfields), ", ".join(n for n in cn if n not in on) or "-",
               ", ".join(n for n in on if n not in cn) or "-"))
        return
    for i, ((cname, ctype), (oname, otype)) in enumerate(zip(cfields, ofields)):
        if cname != oname:
            err("%s: struct %s field %d is %s, the header %s" % (lang, name, i, oname, cname))
        elif not same(ctype, otype):
            err("%s: struct %s field %s is %s, the header %s" % (lang, name, cname, otype, ctype))


def layout_check(header_path, header, py, verbose):
    """Compiles a probe printing sizeof/offsetof of every struct field; compares ctypes."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        print("check_drift: no C compiler: layout probe skipped")
        return []
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "%s"' % os.path.abspath(header_path),
             "int main(void) {"]
    for name, fields in header.structs.items():
        lines.append('  printf("%%s %%zu\\n", "%s", sizeof(%s));' % (name, name))
        for f, _ in fields:
            lines.append('  printf("%%s.%%s %%zu\\n", "%s", "%s", offsetof(%s, %s));' % (name, f, name, f))
    lines.append("  return 0;\n}")
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = os.path.join(tmp, "probe.c"), os.path.join(tmp, "probe")
        open(src, "w").write("\n".join(lines))
        r = subprocess.run([cc, "-std=c11", "-I", os.path.dirname(header_path), src, "-o", exe],
                           capture_output=True, text=True)
        if r.returncode:
            return ["layout probe does not compile:\n" + r.stderr]
        out = subprocess.run([exe], capture_output=True, text=True, check=True).stdout
    c = dict(line.rsplit(" ", 1) for line in out.strip().split("\n"))
    for name in header.structs:
        pc = getattr(py, name, None)
        if pc is None:
            continue
        if int(c[name]) != ctypes.sizeof(pc):
            errors.append("python: sizeof(%s) = %d, C %s" % (name, ctypes.sizeof(pc), c[name]))
        for f, _ in header.structs[name]:
            key = "%s.%s" % (name, f)
            if hasattr(pc, f) and getattr(pc, f).offset != int(c[key]):
                errors.append("python: offsetof(%s) = %d, C %s" % (key, getattr(pc, f).offset, c[key]))
    if verbose:
        print("layout probe: %d structs, sizes and offsets compared" % len(header.structs))
    return errors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--header", default=os.path.join(ROOT, "include", "rwkvpeft.h"))
    ap.add_argument("--rust", default=os.path.join(ROOT, "bindings", "rust", "src", "sys.rs"))
    ap.add_argument("--no-cc", action="store_true", help="skip the compiled layout probe")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    header = Header(a.header)
    if not header.functions or not header.structs:
        print("check_drift: parsed nothing from %s" % a.header)
        return 1
    py = load_python_ffi()
    rs = RustSys(a.rust)
    errors = compare(header, py, rs, a.verbose)
    if not a.no_cc:
        errors += layout_check(a.header, header, py, a.verbose)
    if errors:
        print("check_drift: %d difference(s) between %s and the bindings:"
              % (len(errors), os.path.relpath(a.header, ROOT)))
        for e in errors:
            print("  - " + e)
        return 1
    print("check_drift: OK — %d functions, %d structs, %d constants match in Python and Rust"
          % (len(header.functions), len(header.structs), len(header.constants)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
