"""Data package: installed as ``flowlang.grammar``, it carries flowlang.lark and SPEC.md."""
