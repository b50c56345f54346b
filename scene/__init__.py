"""Scene: the cameras of a dataset split into train/test, its extent, and where models are saved."""
import os

from scene.dataset_readers import read_scene


class Scene:
    def __init__(self, dataset):
        info = read_scene(dataset.source_path, dataset.images, dataset.eval, dataset.resolution,
                          dataset.white_background, dataset.data_device, dataset.depths,
                          dataset.num_random_points)
        self.model_path = dataset.model_path
        self.train_cameras = info.train_cameras
        self.test_cameras = info.test_cameras
        self.points, self.colors = info.points, info.colors
        self.cameras_extent = info.radius
        self.kind = info.kind

    def getTrainCameras(self):
        return self.train_cameras

    def getTestCameras(self):
        return self.test_cameras

    def point_cloud_dir(self, iteration, index=None):
        """<model>/point_cloud[_<index>]/iteration_<it>: index is the distillation model number."""
        name = "point_cloud" if index is None else f"point_cloud_{index}"
        return os.path.join(self.model_path, name, f"iteration_{iteration}")
