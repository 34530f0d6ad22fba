"""di_star.memory: the DI* step's memory plan, arithmetic checked by hand, and the full-SDXL
numbers from the architectures' own parameter counts."""
import pytest

from di_star import memory as mem

GIB = 2**30


def test_optimizer_state_bytes_by_hand():
    assert mem.optimizer_state_bytes([1000, 10], "adamw") == 8 * 1010
    assert mem.optimizer_state_bytes([1000, 10], "adamw_bf16") == 4 * 1010
    # 8-bit: 1 byte per moment, one fp32 absmax per 256-block per moment; small tensors fp32.
    assert mem.optimizer_state_bytes([4096], "adamw8bit") == 2 * 4096 + 2 * 4 * 16
    assert mem.optimizer_state_bytes([4097], "adamw8bit") == 2 * 4097 + 2 * 4 * 17
    assert mem.optimizer_state_bytes([4095], "adamw8bit") == 8 * 4095
    with pytest.raises(ValueError):
        mem.optimizer_state_bytes([1], "sgd")


def test_step_memory_parts_by_hand():
    c = mem.Counts(unet=[100, 900], text_encoders=50, vae=10, reward=20)
    p = mem.step_memory(c, "adamw", "bf16")
    assert p["generator weights (fp32)"] == p["assistant weights (fp32)"] == 4000
    assert p["gradients (fp32)"] == 4000 and p["optimizer states"] == 2 * 8000
    assert p["reference UNet (frozen)"] == 2000 and p["text encoders (frozen)"] == 100
    assert p["VAE (frozen)"] == 20 and p["reward model (frozen)"] == 40
    assert p["total"] == 4000 * 3 + 16000 + 2000 + 100 + 20 + 40
    ddp = mem.step_memory(c, "adamw", "bf16", ddp=True, ema=True)
    assert ddp["gradients (fp32)"] == 8000 and ddp["generator EMA (fp32)"] == 4000
    assert mem.step_memory(c, "adamw", "fp16")["VAE (frozen)"] == 40  # SDXL's VAE stays fp32


@pytest.mark.slow
def test_full_sdxl_plan():
    """Counts from the real configs (meta device); the preset's 8-bit AdamW fits an 80 GB GPU
    before activations with room to spare, fp32 AdamW does not leave room for activations."""
    c = mem.sdxl_counts()
    assert sum(c.unet) == 2_567_463_684
    assert round(c.text_encoders / 1e6) == 818 and round(c.vae / 1e6) == 84
    rows = mem.plan_rows(c, "bf16")
    assert rows["adamw"]["total"] > 75 > rows["adamw_bf16"]["total"] > rows["adamw8bit"]["total"]
    assert rows["adamw8bit"]["optimizer states"] == pytest.approx(
        rows["adamw"]["optimizer states"] / 4, rel=0.02)
    assert "| total |" in mem.render(rows, "t")
