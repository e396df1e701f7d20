"""The ROS package around the library: launch file, installed layout and executables, build (CMake script and
colcon), library import without rclpy, generated messages next to the source tree."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from metrabs_ros.ros.node_processes import ensure_messages, ros_environment

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / 'launch' / 'pose.launch.py'
REQUIRED_ARGUMENTS = {'image', 'camera_info', 'compressed', 'model', 'detector', 'skeleton', 'namespace',
                      'params_file', 'rviz', 'demo'}


@pytest.fixture(scope='module', autouse=True)
def built_package():
    """(Re)build + install the ROS package, so that the installed copy is the current source (fast if it is)."""
    result = subprocess.run(['bash', str(REPO / 'scripts' / 'build_ros.sh')], capture_output=True, text=True,
                            env=dict(os.environ, PYTHON=sys.executable), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    ensure_messages(build=False)


def install_prefix() -> Path:
    """Where build_ros.sh installed the package: the interpreter's prefix (the venv), or AMENT_PREFIX_PATH."""
    for prefix in [sys.prefix] + os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        if prefix and (Path(prefix) / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'metrabs_ros').exists():
            return Path(prefix)
    pytest.fail('metrabs_ros is not installed in the venv (scripts/build_ros.sh)')


def _call_name(node):
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, 'id', None)


def _kwarg(call, name):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _literal(node, constants):
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    return ast.literal_eval(node)


def test_launch_file_declarations():
    try:   # a full ROS installation (note: <repo>/launch alone would import as an empty namespace package)
        from launch import LaunchDescription  # noqa: F401
        import launch_ros  # noqa: F401
        has_launch = True
    except ImportError:
        has_launch = False
    if has_launch:
        import importlib.util
        spec = importlib.util.spec_from_file_location('pose_launch', LAUNCH_FILE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        description = module.generate_launch_description()
        names = {arg.name for arg in description.get_launch_arguments()}
        assert REQUIRED_ARGUMENTS <= names
        return

    # No `launch` package here (PyPI wheels): validate the file statically.
    tree = ast.parse(LAUNCH_FILE.read_text())
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    declared = {ast.literal_eval(c.args[0]) for c in calls if _call_name(c) == 'DeclareLaunchArgument'}
    assert REQUIRED_ARGUMENTS <= declared, REQUIRED_ARGUMENTS - declared
    # every LaunchConfiguration used is declared
    used = {ast.literal_eval(c.args[0]) for c in calls if _call_name(c) == 'LaunchConfiguration'
            and isinstance(c.args[0], ast.Constant)}
    tuples = [n for n in ast.walk(tree) if isinstance(n, ast.Tuple)]
    for t in tuples:   # the names evaluated in the OpaqueFunction
        if all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in t.elts) and 'image' in \
                [e.value for e in t.elts]:
            used |= {e.value for e in t.elts}
    assert used <= declared, used - declared

    nodes = [c for c in calls if _call_name(c) == 'Node']
    executables = {(_literal(_kwarg(c, 'package'), constants), _literal(_kwarg(c, 'executable'), constants))
                   for c in nodes}
    assert executables == {('metrabs_ros', 'pose_node'), ('metrabs_ros', 'demo_camera'), ('rviz2', 'rviz2')}
    prefix = install_prefix()
    for package, executable in executables:
        if package == 'metrabs_ros':
            path = prefix / 'lib' / package / executable
            assert path.is_file() and os.access(path, os.X_OK), path

    # remappings of the pose node: its two input names (the node derives <image>/compressed itself)
    pose_call = next(c for c in nodes if _literal(_kwarg(c, 'executable'), constants) == 'pose_node')
    remapped = {ast.literal_eval(t.elts[0]) for t in _kwarg(pose_call, 'remappings').elts}
    assert remapped == {'image', 'camera_info'}
    source_text = (REPO / 'metrabs_ros' / 'ros' / 'pose_node.py').read_text()
    assert "'camera_info'" in source_text and "resolve_topic_name('image')" in source_text
    # RViz only when rviz2 resolves at launch time (find_executable), else a warning and the rest runs
    rviz_call = next(c for c in nodes if _literal(_kwarg(c, 'executable'), constants) == 'rviz2')
    function = next(f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and rviz_call in ast.walk(f))
    body = ast.unparse(function)
    assert "find_executable('rviz2', 'rviz2')" in body and 'warning(missing_message(' in body
    assert body.index("find_executable('rviz2'") < body.index("executable='rviz2'")
    demo_call = next(c for c in nodes if _literal(_kwarg(c, 'executable'), constants) == 'demo_camera')
    demo_remapped = {ast.literal_eval(t.elts[0]) for t in _kwarg(demo_call, 'remappings').elts}
    assert demo_remapped == {'image', 'camera_info'}

    # parameter overrides name real parameters; the default params file and RViz config exist (source + share)
    from metrabs_ros.ros.pose_node import PARAMETERS_BY_NAME
    source = LAUNCH_FILE.read_text()
    for parameter in ('model_path', 'detector_path', 'skeleton', 'backend', 'compressed'):
        assert f"'{parameter}'" in source and parameter in PARAMETERS_BY_NAME
    for relative in ('config/pose.yaml', 'config/fastdds_large_shm.xml', 'rviz/pose.rviz', 'launch/pose.launch.py'):
        assert f"/{relative.split('/', 1)[1]}" in source or relative.startswith('launch'), relative
        assert (REPO / relative).is_file()
        assert (prefix / 'share' / 'metrabs_ros' / relative).is_file(), relative


def test_rviz_config_shows_markers_in_the_optical_frame():
    config = yaml.safe_load((REPO / 'rviz' / 'pose.rviz').read_text())
    manager = config['Visualization Manager']
    topics = {d['Class']: d.get('Topic', {}).get('Value') for d in manager['Displays']}
    assert topics['rviz_default_plugins/MarkerArray'] == '/markers'
    assert topics['rviz_default_plugins/Image'] == '/debug_image'
    assert manager['Global Options']['Fixed Frame'] == 'camera_optical_frame'


def test_installed_layout_and_rpath():
    prefix = install_prefix()
    share = prefix / 'share' / 'metrabs_ros'
    for relative in ('package.xml', 'msg/Poses3D.msg', 'msg/Person3D.msg', 'msg/Keypoint2D.msg'):
        assert (share / relative).is_file(), relative
    site = Path(next(p for p in sys.path if p.startswith(str(prefix)) and p.endswith('site-packages')))
    installed = site / 'metrabs_ros'
    assert (installed / 'msg' / '_poses3_d.py').is_file()
    assert (installed / 'estimator.py').is_file() and (installed / 'ros' / 'pose_node.py').is_file()
    assert not list(site.glob('metrabs_ros-*.egg-info')), 'ament egg-info would make pip delete the install'
    extension = next(installed.glob('metrabs_ros_s__rosidl_typesupport_c*.so'))
    if shutil.which('readelf'):
        dynamic = subprocess.run(['readelf', '-d', str(extension)], capture_output=True, text=True).stdout
        runpath = next(line for line in dynamic.splitlines() if 'RUNPATH' in line or 'RPATH' in line)
        assert '$ORIGIN/../../..' in runpath, runpath     # finds <prefix>/lib/libmetrabs_ros__*.so unsourced


def test_library_imports_without_rclpy_and_messages_join_the_source_package():
    code = ('import sys; sys.modules["rclpy"] = None\n'
            'import metrabs_ros, metrabs_ros.camera, metrabs_ros.ros.image_conversion, metrabs_ros.ros.camera_info\n'
            'import metrabs_ros.ros.pose_node\n'
            'print(metrabs_ros.__file__)')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(REPO / 'metrabs_ros' / '__init__.py')
    code = ('import metrabs_ros\nfrom metrabs_ros.msg import Poses3D\nfrom metrabs_ros.ros.image_conversion import '
            'image_msg_to_rgb\nfrom rclpy.serialization import serialize_message\n'
            'print(metrabs_ros.__file__); print(Poses3D.__module__, len(serialize_message(Poses3D())))')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split('\n')
    assert lines[0] == str(REPO / 'metrabs_ros' / '__init__.py')     # library from the source tree ...
    assert lines[1].startswith('metrabs_ros.msg._poses3_d')            # ... messages from the install


def test_installed_executables_run(tmp_path):
    prefix = install_prefix()
    env = ros_environment(domain_id=97)
    env['PYTHONPATH'] = ''                                # the installed copy, not the source tree
    result = subprocess.run([str(prefix / 'lib' / 'metrabs_ros' / 'pose_node'), '--ros-args', '-p',
                             f'model_path:={tmp_path / "missing.onnx"}'], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 1 and 'missing.onnx' in result.stdout + result.stderr
    result = subprocess.run([str(prefix / 'lib' / 'metrabs_ros' / 'demo_camera'), '--ros-args',
                             '-p', 'synthetic_frames:=1', '-p', 'max_frames:=2', '-p', 'rate_hz:=50.0',
                             '-p', 'width:=64', '-p', 'height:=48'],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'published 2 frames' in result.stdout + result.stderr


def test_build_script_is_idempotent():
    result = subprocess.run(['bash', str(REPO / 'scripts' / 'build_ros.sh')], capture_output=True, text=True,
                            env=dict(os.environ, PYTHON=sys.executable), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    result = subprocess.run(['bash', str(REPO / 'scripts' / 'build_ros.sh')], capture_output=True, text=True,
                            env=dict(os.environ, PYTHON=sys.executable), timeout=600)
    assert result.returncode == 0 and 'up to date' in result.stdout, result.stdout + result.stderr


@pytest.mark.slow
def test_colcon_build_of_the_package(tmp_path):
    colcon = Path(sys.prefix) / 'bin' / 'colcon'
    if not colcon.exists():
        pytest.skip('colcon is not installed in this environment')
    env = dict(os.environ, AMENT_PREFIX_PATH=os.environ.get('AMENT_PREFIX_PATH', sys.prefix),
               PATH=f'{Path(sys.prefix) / "bin"}{os.pathsep}{os.environ.get("PATH", "")}')
    result = subprocess.run(
        [str(colcon), '--log-base', str(tmp_path / 'log'), 'build', '--base-paths', str(REPO),
         '--build-base', str(tmp_path / 'build'), '--install-base', str(tmp_path / 'install'),
         '--event-handlers', 'console_direct-'], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    install = tmp_path / 'install' / 'metrabs_ros'
    for executable in ('pose_node', 'pose_lifecycle_node', 'demo_camera', 'benchmark'):
        assert os.access(install / 'lib' / 'metrabs_ros' / executable, os.X_OK)
    for relative in ('launch/pose.launch.py', 'config/pose.yaml', 'rviz/pose.rviz', 'msg/Poses3D.msg'):
        assert (install / 'share' / 'metrabs_ros' / relative).is_file()
    code = ('import metrabs_ros; from metrabs_ros.msg import Poses3D; '
            'print(metrabs_ros.__path__[0]); print(Poses3D.__module__)')
    result = subprocess.run(['bash', '-c', f'source {tmp_path}/install/setup.bash && {sys.executable} -c "{code}"'],
                            capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(str(install))


def _run_with_ament_prefix(code, ament_prefix_path, tmp_path):
    env = ros_environment(domain_id=96)
    env['AMENT_PREFIX_PATH'] = ament_prefix_path
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)


def test_rviz_is_optional_at_launch_time(tmp_path):
    """rviz:=true where rviz2 is not installed (the pip setup): the launch file's lookup says so and the rest of
    the launch goes on; with rviz2 in the ament index it is found. Runs the lookup in a process of its own with the
    AMENT_PREFIX_PATH a launch would have (the `launch` package itself is not in the PyPI wheel set)."""
    code = ('from metrabs_ros.ros.launch_support import find_executable, missing_message\n'
            'path, reason = find_executable("rviz2", "rviz2")\n'
            'print(path); print(missing_message("rviz", "rviz2", reason, "hint") if path is None else "found")')
    result = _run_with_ament_prefix(code, sys.prefix, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == 'None'
    assert "rviz:=true but package 'rviz2' is not installed" in result.stdout
    assert 'the rest of the launch runs' in result.stdout
    # a prefix that has rviz2 (ament index marker + executable)
    fake = tmp_path / 'ros_prefix'
    (fake / 'share' / 'ament_index' / 'resource_index' / 'packages').mkdir(parents=True)
    (fake / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'rviz2').write_text('')
    executable = fake / 'lib' / 'rviz2' / 'rviz2'
    executable.parent.mkdir(parents=True)
    executable.write_text('#!/bin/sh\n')
    executable.chmod(0o755)
    result = _run_with_ament_prefix(code, f'{fake}{os.pathsep}{sys.prefix}', tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(executable), 'found']
    try:
        import launch  # noqa: F401
        import launch_ros  # noqa: F401
    except ImportError:
        return
    # A full ROS installation: run the real launch with rviz:=true and no rviz2 in the index
    env = ros_environment(domain_id=95)
    env['AMENT_PREFIX_PATH'] = os.pathsep.join(p for p in env.get('AMENT_PREFIX_PATH', '').split(os.pathsep)
                                               if p and not (Path(p) / 'lib' / 'rviz2').exists())
    process = subprocess.Popen(['ros2', 'launch', str(LAUNCH_FILE), 'rviz:=true', 'demo:=true'],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        output, _ = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.send_signal(2)
        output, _ = process.communicate(timeout=30)
    assert "rviz:=true but package 'rviz2'" in output and 'pose_node' in output, output


def _documented_sourcing_command():
    """The line of docs/ros.md that sources the venv's package environment (pip-wheel setup)."""
    text = (REPO / 'docs' / 'ros.md').read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith('source ')
             and 'local_setup.bash' in line and '.venv' in line]
    assert lines, 'docs/ros.md does not document sourcing the pip-wheel setup (.venv/share/.../local_setup.bash)'
    return lines[0]


def test_documented_sourcing_makes_the_package_findable(tmp_path):
    """ros2 launch / ros2 run find packages through the ament index (AMENT_PREFIX_PATH): the command docs/ros.md
    and the README give for the pip setup must put metrabs_ros there, from a clean shell."""
    command = _documented_sourcing_command()
    assert command in (REPO / 'README.md').read_text(), 'the README gives another sourcing command than docs/ros.md'
    check = ('from ament_index_python.packages import get_package_share_directory, get_package_prefix; '
             'print(get_package_share_directory("metrabs_ros")); print(get_package_prefix("metrabs_ros"))')
    script = f'cd {REPO} && {command} && .venv/bin/python -c \'{check}\''
    result = subprocess.run(['env', '-i', f'HOME={tmp_path}', 'PATH=/usr/bin:/bin', 'bash', '--noprofile',
                             '--norc', '-c', script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    share, prefix = result.stdout.split()[-2:]
    assert (Path(share) / 'launch' / 'pose.launch.py').is_file()
    assert Path(prefix, 'lib', 'metrabs_ros', 'pose_node').is_file()
