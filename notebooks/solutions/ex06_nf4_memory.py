"""Exercise 06 (notebook 06): the memory of 4-bit (NF4) weights. Checker: utils.exercises.check_06."""

BLOCK = 64  # weights per quantization block (bitsandbytes' default)
BLOCK2 = 256  # double quantization: scales per second-level block


def nf4_bytes(n_params: float, double_quant: bool = False) -> float:
    """Bytes of n_params weights in NF4: 4 bits each, plus the quantization constants.

    Plain: one float32 absmax (4 bytes) per block of 64 weights, 0.5 bits per weight.
    Double quantization (QLoRA): the absmax stored in 8 bits, plus one float32 per 256 blocks.
    """
    weights = n_params * 4 / 8
    blocks = n_params / BLOCK
    if double_quant:
        return weights + blocks * 1 + 4 * blocks / BLOCK2
    return weights + 4 * blocks
