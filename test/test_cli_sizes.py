"""Size flags shared by the ffs-ros tools: WxH everywhere, export's old HxW --size deprecated."""

import argparse

import pytest

from ffs_ros.cli import main
from ffs_ros.cli.common import add_size_arguments, resolve_size


def parse(argv, legacy=False, default=(640, 480)):
    p = argparse.ArgumentParser()
    add_size_arguments(p, 'image size', default, legacy_hxw=legacy)
    return p.parse_args(argv)


def test_width_height_and_size_are_the_same_wxh(capsys):
    assert resolve_size(parse([]), 't', (640, 480)) == (640, 480)
    assert resolve_size(parse(['--size', '320x256']), 't') == (320, 256)
    assert resolve_size(parse(['--width', '320', '--height', '256']), 't') == (320, 256)
    assert capsys.readouterr().err == ''
    for argv, msg in (
        (['--width', '320'], 'go together'),
        (['--size', '320x256', '--width', '1', '--height', '2'], 'not both'),
        (['--size', '320-256'], r'must look like 640x480 \(WxH\)'),
        (['--width', '0', '--height', '8'], 'must be positive'),
    ):
        with pytest.raises(ValueError, match=msg):
            resolve_size(parse(argv), 't')


def test_export_size_is_deprecated_hxw_with_a_warning(capsys):
    args = parse(['--size', '256x320'], legacy=True, default=(320, 256))
    assert resolve_size(args, 'export', (320, 256), legacy_hxw=True) == (320, 256)
    err = capsys.readouterr().err
    assert 'deprecated' in err and 'use --width 320 --height 256' in err and 'H=256, W=320' in err
    args = parse(['--width', '320', '--height', '256'], legacy=True)
    assert resolve_size(args, 'export', legacy_hxw=True) == (320, 256)
    assert capsys.readouterr().err == ''


@pytest.fixture
def fake_export(monkeypatch):
    """Record the (h, w) that `ffs-ros export` traces, without a model."""
    import ffs_ros.model
    import ffs_ros.model.export

    calls = []
    monkeypatch.setattr(ffs_ros.model, 'load_model', lambda path: object())

    def export_two_stage(model, out, h, w, **kw):
        calls.append((h, w))
        return out

    monkeypatch.setattr(ffs_ros.model.export, 'export_two_stage', export_two_stage)
    return calls


def test_export_cli_size_flags(fake_export, tmp_path, capsys):
    base = ['export', '--checkpoint', 'x.pt', '--out', str(tmp_path)]
    assert main(base + ['--width', '320', '--height', '192']) == 0
    assert 'warning' not in capsys.readouterr().err
    assert main(base + ['--size', '192x320']) == 0  # the old HxW reading, with a warning
    assert 'use --width 320 --height 192' in capsys.readouterr().err
    assert main(base) == 0  # default: 320 wide, 256 high
    assert fake_export == [(192, 320), (192, 320), (256, 320)]
    assert main(base + ['--width', '320']) == 2
    assert 'go together' in capsys.readouterr().out


def test_bench_and_build_engine_take_width_and_height(capsys):
    from ffs_ros.cli.build_engine import net_size

    assert net_size(argparse.Namespace(width=640, height=448, size=None)) == (448, 640)
    assert net_size(argparse.Namespace(width=None, height=None, size='640x448')) == (448, 640)
    assert net_size(argparse.Namespace(width=None, height=None, size=None)) is None
    with pytest.raises(ValueError, match='multiples of 32'):
        net_size(argparse.Namespace(width=600, height=448, size=None))
    assert main(['bench', '--iters', '1', '--width', '8', '--height', '8']) == 2
    assert 'at least 16x16' in capsys.readouterr().out


@pytest.mark.parametrize('tool', ['bench', 'export', 'build-engine'])
def test_help_shows_the_size_flags_and_defaults(tool, capsys):
    with pytest.raises(SystemExit):
        main([tool, '--help'])
    text = ' '.join(capsys.readouterr().out.split())
    assert '--width W' in text and '--height H' in text and 'width x height' in text
    if tool != 'build-engine':
        assert '(default: ' in text
