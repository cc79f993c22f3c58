"""The v++ connectivity config: N compute units, each CU's x and y in banks of its own."""

from __future__ import annotations

import pytest

from fpgaas.builder.connectivity import DDR_BANKS, HBM_BANKS, connectivity_config, memory_banks


def lines(config: str, prefix: str) -> list[str]:
    return [line for line in config.splitlines() if line.startswith(prefix)]


def test_one_compute_unit_keeps_input_and_output_in_separate_banks() -> None:
    config = connectivity_config("fpgaas_kernel")

    assert lines(config, "nk=") == ["nk=fpgaas_kernel:1:fpgaas_kernel_1"]
    assert lines(config, "sp=") == ["sp=fpgaas_kernel_1.x:DDR[0]", "sp=fpgaas_kernel_1.y:DDR[1]"]
    assert "[connectivity]" in config.splitlines()


def test_four_compute_units_spread_over_the_four_ddr_banks() -> None:
    config = connectivity_config("fpgaas_kernel", 4, DDR_BANKS)

    assert lines(config, "nk=") == [
        "nk=fpgaas_kernel:4:fpgaas_kernel_1.fpgaas_kernel_2.fpgaas_kernel_3.fpgaas_kernel_4"
    ]
    banks = [line.split(":")[1] for line in lines(config, "sp=")]
    assert banks == ["DDR[0]", "DDR[1]", "DDR[2]", "DDR[3]"] * 2
    assert {line.split(".")[0][3:] for line in lines(config, "sp=")} == {
        f"fpgaas_kernel_{c}" for c in range(1, 5)
    }


def test_hbm_platforms_get_hbm_banks() -> None:
    assert memory_banks("xilinx_u55c_gen3x16_xdma_3_202210_1") == HBM_BANKS
    assert memory_banks("xilinx_u250_gen3x16_xdma_4_1_202210_1") == DDR_BANKS
    config = connectivity_config("k", 3, memory_banks("xilinx_u280_gen3x16_xdma_1_202211_1"))
    assert lines(config, "sp=")[-1] == "sp=k_3.y:HBM[5]"


@pytest.mark.parametrize("compute_units", [0, 65])
def test_a_compute_unit_count_v_plus_plus_cannot_link_is_refused(compute_units: int) -> None:
    with pytest.raises(ValueError, match="compute_units"):
        connectivity_config("fpgaas_kernel", compute_units)
