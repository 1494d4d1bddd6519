#!/usr/bin/env python3
"""Dumps the Go struct types that carry protobuf tags from a Go binary (e.g. kubectl) as JSON.

Go keeps type descriptors for reflection even in stripped binaries. For every named struct in the
binary's type section with at least one `protobuf:"..."` tag this prints its fields in order:
Go name, full struct tag, whether embedded, and the field type (kind, name, element types).

Supports static, non-PIE x86-64 ELF binaries built by Go 1.22-1.24 (abi.Type layout of 48 bytes).

Usage: go_types.py <binary> > go_types.json
"""
import json
import struct
import sys

KINDS = {
    1: "bool", 2: "int", 3: "int8", 4: "int16", 5: "int32", 6: "int64", 7: "uint", 8: "uint8", 9: "uint16",
    10: "uint32", 11: "uint64", 12: "uintptr", 13: "float32", 14: "float64", 17: "array", 20: "interface",
    21: "map", 22: "ptr", 23: "slice", 24: "string", 25: "struct",
}
KIND_STRUCT = 25
TFLAG_UNCOMMON, TFLAG_EXTRA_STAR, TFLAG_NAMED = 1, 2, 4
# abi.Type: Size_, PtrBytes (8 each), Hash (4), TFlag, Align_, FieldAlign_, Kind_ (1 each), Equal, GCData
# (8 each), Str, PtrToThis (4 each).
TYPE_TFLAG, TYPE_KIND, TYPE_STR, TYPE_SIZE = 20, 23, 40, 48
# abi.StructType: Type, PkgPath (8), Fields slice (ptr, len, cap); abi.UncommonType follows it.
STRUCT_FIELDS, STRUCT_SIZE = 56, 80
FIELD_SIZE = 24  # abi.StructField: Name, Typ, Offset


class Binary:
    def __init__(self, path):
        self.data = open(path, "rb").read()
        self.sections = self._sections()
        self.types, self.etypes = self._types_range()

    def u64(self, offset):
        return struct.unpack_from("<Q", self.data, offset)[0]

    def i32(self, offset):
        return struct.unpack_from("<i", self.data, offset)[0]

    def _sections(self):
        d = self.data
        shoff = struct.unpack_from("<Q", d, 0x28)[0]
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", d, 0x3A)
        raw = [struct.unpack_from("<IIQQQQ", d, shoff + i * shentsize) for i in range(shnum)]
        strtab = raw[shstrndx][4]
        sections = {}
        for name_off, typ, _flags, addr, off, size in raw:
            end = d.index(b"\0", strtab + name_off)
            sections[d[strtab + name_off : end].decode()] = (addr, off, size, typ)
        return sections

    def offset(self, addr):
        """File offset of a virtual address."""
        for addr0, off, size, typ in self.sections.values():
            if addr0 and addr0 <= addr < addr0 + size and typ != 8:  # 8: SHT_NOBITS
                return off + (addr - addr0)
        raise KeyError(hex(addr))

    def _types_range(self):
        # runtime.moduledata sits in .noptrdata and starts with a pointer to .gopclntab; further on
        # it holds text, etext, ..., types, etypes where types is the start of .rodata.
        pclntab, text, rodata = self.sections[".gopclntab"][0], self.sections[".text"][0], self.sections[".rodata"][0]
        _addr, off, size, _ = self.sections[".noptrdata"]
        for o in range(off, off + size - 8, 8):
            if self.u64(o) != pclntab:
                continue
            words = [self.u64(o + 8 * k) for k in range(64)]
            if text in words and rodata in words[words.index(text) :]:
                i = words.index(rodata, words.index(text))
                return words[i], words[i + 1]
        sys.exit("runtime.moduledata not found")

    def name(self, addr):
        """Decodes an abi.Name: flags, varint length, bytes, then (if flagged) varint length, tag."""
        d, p = self.data, self.offset(addr)
        flags = d[p]
        p += 1

        def varint():
            nonlocal p
            value = shift = 0
            while True:
                b = d[p]
                p += 1
                value |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    return value

        n = varint()
        text = d[p : p + n].decode("utf-8", "replace")
        p += n
        tag = ""
        if flags & 2:
            t = varint()
            tag = d[p : p + t].decode("utf-8", "replace")
        return text, tag, flags

    def type_name(self, addr):
        o = self.offset(addr)
        tflag = self.data[o + TYPE_TFLAG]
        text, _, _ = self.name(self.types + self.i32(o + TYPE_STR))
        if tflag & TFLAG_EXTRA_STAR:
            text = text[1:]
        return text, bool(tflag & TFLAG_NAMED)

    def describe(self, addr, depth=0):
        o = self.offset(addr)
        kind_code = self.data[o + TYPE_KIND] & 0x1F
        kind = KINDS.get(kind_code, str(kind_code))
        text, named = self.type_name(addr)
        out = {"kind": kind}
        if named:
            out["name"] = text
        if depth < 4:
            if kind in ("ptr", "slice", "array"):
                out["elem"] = self.describe(self.u64(o + TYPE_SIZE), depth + 1)
            elif kind == "map":
                out["key"] = self.describe(self.u64(o + TYPE_SIZE), depth + 1)
                out["elem"] = self.describe(self.u64(o + TYPE_SIZE + 8), depth + 1)
        return out

    def structs(self):
        """Named struct types with protobuf tags, keyed `pkgpath.Name`."""
        start = self.offset(self.types)
        end = start + (self.etypes - self.types)
        found = {}
        for o in range(start, end - STRUCT_SIZE, 8):
            if self.data[o + TYPE_KIND] & 0x1F != KIND_STRUCT:
                continue
            fields_ptr, count, cap = (self.u64(o + STRUCT_FIELDS + 8 * k) for k in range(3))
            if count == 0 or count != cap or count > 200 or not (self.types <= fields_ptr < self.etypes):
                continue
            addr = self.types + (o - start)
            try:
                text, named = self.type_name(addr)
                if not named or not self.data[o + TYPE_TFLAG] & TFLAG_UNCOMMON:
                    continue
                pkg = self.name(self.types + self.i32(o + STRUCT_SIZE))[0]
                fo = self.offset(fields_ptr)
                fields = []
                for k in range(count):
                    fname, ftag, fflags = self.name(self.u64(fo + FIELD_SIZE * k))
                    ftype = self.describe(self.u64(fo + FIELD_SIZE * k + 8))
                    fields.append({"go": fname, "tag": ftag, "embedded": bool(fflags & 8), "type": ftype})
            except (KeyError, IndexError, struct.error):
                continue  # Not a type descriptor after all: the scan is by pattern.
            if any("protobuf:" in f["tag"] for f in fields):
                found[pkg + "." + text.split(".", 1)[-1]] = fields
        return found


def main():
    structs = Binary(sys.argv[1]).structs()
    json.dump(structs, sys.stdout, indent=0, sort_keys=True)
    print(f"{len(structs)} struct types", file=sys.stderr)


main()
