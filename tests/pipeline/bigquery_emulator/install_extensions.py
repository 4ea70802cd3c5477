"""Copy the DuckDB extensions shipped by the duckdb-extension-* wheels into $HOME/.duckdb.

Run with the emulator virtualenv's interpreter and HOME pointing inside that virtualenv
(``make bigquery-emulator`` does). DuckDB loads an extension from
``$HOME/.duckdb/extensions/<version>/<platform>/`` before it would try to download it; the
check at the end loads each one with automatic installation switched off.
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path

import duckdb

EXTENSIONS = ("icu", "ducklake", "spatial")


def main() -> int:
    version = f"v{duckdb.__version__}"
    platform = duckdb.sql("PRAGMA platform").fetchone()[0]
    target = Path.home() / ".duckdb" / "extensions" / version / platform
    target.mkdir(parents=True, exist_ok=True)
    site = Path(sysconfig.get_path("purelib"))
    for name in EXTENSIONS:
        source = (
            site / f"duckdb_extension_{name}" / "extensions" / version / f"{name}.duckdb_extension"
        )
        if not source.is_file():
            print(f"missing {source}: install duckdb-extension-{name}=={duckdb.__version__}")
            return 1
        shutil.copy2(source, target / source.name)
    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    for name in EXTENSIONS:
        con.execute(f"LOAD {name}")
    print(f"DuckDB {version} extensions {', '.join(EXTENSIONS)} in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
