"""Training prompt files for the SD trainer: txt / tsv / parquet / bench:NAME, and clear errors."""
import pytest

from di_star.sdxl.prompts import load_prompts
from distar.core.errors import DistarError


def test_txt_tsv_parquet_and_benchmarks(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "p.txt").write_text("a cat\na dog on a skateboard\n", encoding="utf-8")
    assert load_prompts(str(tmp_path / "p.txt")) == ["a cat", "a dog on a skateboard"]
    (tmp_path / "p.tsv").write_text("id\tcaption\taesthetic\n1\ta red car\t6.5\n2\tsunset\t6.3\n")
    assert load_prompts(str(tmp_path / "p.tsv")) == ["a red car", "sunset"]
    pq.write_table(pa.table({"TEXT": ["a fox", "a bowl of ramen"], "AESTHETIC_SCORE": [6.4, 6.9]}),
                   tmp_path / "p.parquet")
    assert load_prompts(str(tmp_path / "p.parquet")) == ["a fox", "a bowl of ramen"]
    assert len(load_prompts("bench:tiny")) == 12


def test_malformed_files_name_the_file_and_line(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = tmp_path / "bad.tsv"
    bad.write_text("prompt\textra\nok\t1\nmissing a field\n")
    with pytest.raises(DistarError, match=r"bad\.tsv, line 3: 1 tab-separated fields"):
        load_prompts(str(bad))
    blank = tmp_path / "blank.txt"
    blank.write_text("one\n\nthree\n")
    with pytest.raises(DistarError, match=r"blank\.txt, line 2: blank line"):
        load_prompts(str(blank))
    nocol = tmp_path / "nocol.tsv"
    nocol.write_text("id\tscore\n1\t2\n")
    with pytest.raises(DistarError, match=r"nocol\.tsv, line 1: no prompt column"):
        load_prompts(str(nocol))
    pq.write_table(pa.table({"prompt": ["fine", None, "also fine"]}), tmp_path / "null.parquet")
    with pytest.raises(DistarError, match=r"null\.parquet, row 1"):
        load_prompts(str(tmp_path / "null.parquet"))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DistarError, match=r"junk\.parquet: not a readable parquet file"):
        load_prompts(str(tmp_path / "junk.parquet"))
    with pytest.raises(DistarError, match="does not exist"):
        load_prompts(str(tmp_path / "nope.txt"))
    (tmp_path / "p.csv").write_text("a,b\n")
    with pytest.raises(DistarError, match="unknown format '.csv'"):
        load_prompts(str(tmp_path / "p.csv"))
