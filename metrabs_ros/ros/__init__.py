"""ROS 2 adapter of metrabs_ros: the pose node, the demo camera and pure-numpy message conversions.

Modules that need rclpy or the generated messages import them; ``image_conversion`` and ``camera_info`` work
on anything with the message's attributes (duck typing) and import no ROS package, so they are unit-testable
without DDS.
"""
